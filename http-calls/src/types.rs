//! Argument types that check themselves while the request is parsed, so a bad value is a 400
//! naming its field (`client_ids[2]`, `message.base64`) before anything is sent.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use gw_gateway_client::{ClientId, Payload};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A client id (as the gateways hand them out), parsed once here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(pub ClientId);

/// A uid or group name: at most 1024 bytes, not blank, no control characters (the rule every
/// gateway applies, [`gw_proto::limits::check_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

/// A WebSocket close code: 1000 or 3000..=4999 (the codes an application may send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

/// A close reason: at most 123 bytes (what fits in a close frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseText(pub String);

/// A message to clients: a JSON string is sent as a text frame, `{"base64": "…"}` as a binary
/// frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message(pub Payload);

impl From<Message> for Payload {
    fn from(m: Message) -> Self {
        m.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<ClientId>().map(Id).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match gw_proto::limits::check_name(&s) {
            Ok(()) => Ok(Name(s)),
            Err(e) => Err(de::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for CloseCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(d)?;
        if code == 1000 || (3000..=4999).contains(&code) {
            Ok(CloseCode(code))
        } else {
            Err(de::Error::custom(format!("{code} is not a close code an application may send (1000 or 3000..=4999)")))
        }
    }
}

impl<'de> Deserialize<'de> for CloseText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 123 {
            Err(de::Error::custom(format!("is {} bytes; a close reason has at most 123", s.len())))
        } else {
            Ok(CloseText(s))
        }
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (text frame) or {\"base64\": \"...\"} (binary frame)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Message, E> {
                Ok(Message(Payload::text(s)))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Message, E> {
                Ok(Message(Payload::text(s)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
                let mut data = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key != "base64" {
                        return Err(de::Error::unknown_field(&key, &["base64"]));
                    }
                    let text: Cow<'de, str> = map.next_value()?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text.as_bytes())
                        .map_err(|e| de::Error::custom(format!("base64: {e}")))?;
                    data = Some(bytes);
                }
                let data = data.ok_or_else(|| de::Error::missing_field("base64"))?;
                Ok(Message(Payload::binary(data)))
            }
        }
        d.deserialize_any(V)
    }
}

/// String newtypes serialize as their string.
macro_rules! serialize_as_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    )*};
}

serialize_as_str!(Name, CloseText);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl Serialize for CloseCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match (self.0.binary, self.0.as_text()) {
            (false, Some(text)) => s.serialize_str(text),
            _ => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("base64", &base64::engine::general_purpose::STANDARD.encode(&self.0.data))?;
                m.end()
            }
        }
    }
}

/// `impl JsonSchema` with a fixed name and schema.
macro_rules! schema {
    ($($t:ty => $name:literal $schema:tt;)*) => {$(
        impl JsonSchema for $t {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    )*};
}

schema! {
    Id => "ClientId" {
        "type": "string",
        "description": "A client id as the gateways hand them out (opaque; never reused).",
        "examples": ["MTI3LjAuMC4xOjI5MDA.1f.1"]
    };
    Name => "Name" {
        "type": "string",
        "minLength": 1,
        "maxLength": 1024,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$",
        "description": "A uid or group name: at most 1024 bytes (UTF-8), not only whitespace, no control characters."
    };
    CloseCode => "CloseCode" {
        "type": "integer",
        "description": "WebSocket close code: 1000 or 3000..=4999.",
        "oneOf": [{ "const": 1000 }, { "minimum": 3000, "maximum": 4999 }]
    };
    CloseText => "CloseText" { "type": "string", "maxLength": 123, "description": "Close reason (at most 123 bytes)." };
}

impl JsonSchema for Message {
    fn schema_name() -> Cow<'static, str> {
        "Message".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string is sent as a WebSocket text frame; {\"base64\": \"...\"} as a binary frame.",
            "oneOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": { "base64": { "type": "string", "contentEncoding": "base64" } },
                    "required": ["base64"],
                    "additionalProperties": false
                }
            ]
        })
    }
}
