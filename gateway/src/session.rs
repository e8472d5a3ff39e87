//! Session JSON handling at the gateway: validation and deep merge.

use bytes::Bytes;
use serde_json::{Map, Value};

/// Why a session (or a change to one) was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The bytes are not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON, but not an object (what it is instead).
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
}

/// Parses a session, which must be a JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, SessionError> {
    match serde_json::from_slice::<Value>(bytes)? {
        Value::Object(m) => Ok(m),
        other => Err(SessionError::NotAnObject(kind(&other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deep-merges `patch` into `current`: objects merge key by key, `null` deletes a key, anything
/// else replaces.
pub(crate) fn merge(current: Option<&[u8]>, patch: &[u8]) -> Result<Bytes, SessionError> {
    let patch = parse_object(patch)?;
    let mut base = match current {
        Some(bytes) => parse_object(bytes).unwrap_or_default(),
        None => Map::new(),
    };
    merge_into(&mut base, patch);
    Ok(Bytes::from(serde_json::to_vec(&Value::Object(base)).expect("a JSON value serializes")))
}

/// Applies a handler's write-back: top-level keys in `changed` replace, `removed` keys go.
pub(crate) fn write_back(current: Option<&[u8]>, changed: &[u8], removed: &[String]) -> Result<Bytes, SessionError> {
    let changed = parse_object(changed)?;
    let mut base = match current {
        Some(bytes) => parse_object(bytes).unwrap_or_default(),
        None => Map::new(),
    };
    for k in removed {
        // Shifting, not swapping: the keys left keep their order, as after PHP's `unset`.
        base.shift_remove(k);
    }
    base.extend(changed);
    Ok(Bytes::from(serde_json::to_vec(&Value::Object(base)).expect("a JSON value serializes")))
}

fn merge_into(base: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                base.shift_remove(&k);
            }
            Value::Object(p) => match base.get_mut(&k) {
                Some(Value::Object(b)) => merge_into(b, p),
                _ => {
                    let mut fresh = Map::new();
                    merge_into(&mut fresh, p);
                    base.insert(k, Value::Object(fresh));
                }
            },
            other => {
                base.insert(k, other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_merge_replaces_merges_and_deletes() {
        let cur = br#"{"a":1,"nested":{"x":1,"y":2},"gone":true}"#;
        let out = merge(Some(cur), br#"{"b":2,"nested":{"y":3,"z":4},"gone":null}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"a":1,"b":2,"nested":{"x":1,"y":3,"z":4}}));
    }

    #[test]
    fn write_back_replaces_only_touched_keys() {
        let cur = br#"{"mine":{"a":1,"b":2},"theirs":1,"old":0}"#;
        let out = write_back(Some(cur), br#"{"mine":{"a":1}}"#, &["old".to_string()]).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"mine":{"a":1},"theirs":1}));
    }

    /// A session keeps its keys in the order they were first written, as a PHP array does (PHP
    /// workers compare the bytes they get back with their own serialization).
    #[test]
    fn keys_keep_the_order_they_were_written_in() {
        let cur = br#"{"zeta":1,"alpha":{"y":1,"x":2},"mid":3,"gone":0}"#;
        let out = merge(Some(cur), br#"{"gone":null,"alpha":{"w":0},"new":4,"zeta":5}"#).unwrap();
        assert_eq!(&out[..], br#"{"zeta":5,"alpha":{"y":1,"x":2,"w":0},"mid":3,"new":4}"#);
        let out = write_back(Some(cur), br#"{"mid":6,"added":7}"#, &["alpha".to_string()]).unwrap();
        assert_eq!(&out[..], br#"{"zeta":1,"mid":6,"gone":0,"added":7}"#);
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(merge(None, b"[1]").is_err());
        assert!(merge(None, b"not json").is_err());
        assert!(parse_object(b"42").unwrap_err().to_string().contains("a number"));
        assert!(matches!(parse_object(b"{").unwrap_err(), SessionError::NotJson(_)));
    }
}
