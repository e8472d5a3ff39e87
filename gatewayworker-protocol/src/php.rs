//! PHP `serialize()` and `unserialize()` for the plain values GatewayWorker's packets carry (null,
//! bool, int, float, string, array with int or string keys), and their bridge to the JSON sessions
//! our gateway keeps. Objects, enums and references are refused: PHP's own side calls
//! `unserialize` with `allowed_classes => false`, and nothing in the protocol needs them.
//!
//! [`unserialize`] is built for hostile input: nesting depth and the total number of elements are
//! capped, a declared length or count is checked against the bytes actually left before anything
//! is allocated, so a bomb like `a:999999999:{` is a clear error, not an allocation.

use std::fmt::Write as _;

/// A PHP value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `N;`
    Null,
    /// `b:0;` / `b:1;`
    Bool(bool),
    /// `i:42;`
    Int(i64),
    /// `d:0.5;`
    Float(f64),
    /// PHP strings are bytes, not necessarily UTF-8.
    Str(Vec<u8>),
    /// An ordered map, in PHP's insertion order.
    Array(Vec<(Key, Value)>),
}

/// An array key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A string key (bytes).
    Str(Vec<u8>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s.into_bytes())
    }
}

impl From<&str> for Key {
    /// A string key as PHP stores it: a canonical decimal integer becomes an integer key.
    fn from(s: &str) -> Self {
        match s.parse::<i64>() {
            Ok(n) if n.to_string() == s => Key::Int(n),
            _ => Key::Str(s.as_bytes().to_vec()),
        }
    }
}

impl Value {
    /// An array of `(key, value)` pairs.
    pub fn map<K: Into<Key>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Array(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A list: an array with keys 0, 1, 2, …
    pub fn list(items: impl IntoIterator<Item = Value>) -> Self {
        Value::Array(items.into_iter().enumerate().map(|(i, v)| (Key::Int(i as i64), v)).collect())
    }

    /// The value's `serialize()` text.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"N;"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"b:1;" } else { b"b:0;" }),
            Value::Int(n) => out.extend_from_slice(format!("i:{n};").as_bytes()),
            Value::Float(f) => {
                let mut s = String::from("d:");
                if f.is_nan() {
                    s.push_str("NAN");
                } else if f.is_infinite() {
                    s.push_str(if *f > 0.0 { "INF" } else { "-INF" });
                } else {
                    // Shortest text that reads back as the same double, as PHP's
                    // serialize_precision = -1 does; PHP's strtod reads `1e100` and `1.0`.
                    let _ = write!(s, "{f:?}");
                }
                s.push(';');
                out.extend_from_slice(s.as_bytes());
            }
            Value::Str(b) => write_str(out, b),
            Value::Array(items) => {
                out.extend_from_slice(format!("a:{}:{{", items.len()).as_bytes());
                for (k, v) in items {
                    match k {
                        Key::Int(n) => out.extend_from_slice(format!("i:{n};").as_bytes()),
                        Key::Str(b) => write_str(out, b),
                    }
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The string's bytes, if this is a string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) => Some(b),
            _ => None,
        }
    }
}

fn write_str(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("s:{}:\"", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\";");
}

/// Bounds for [`unserialize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest array nesting accepted.
    pub max_depth: usize,
    /// Most values (array elements at every level, counted together) in one input.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_depth: 32, max_elements: 100_000 }
    }
}

/// Why bytes are not an acceptable serialized value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhpError {
    /// The input ends inside a value.
    #[error("serialized value ends early at byte {0}")]
    Truncated(usize),
    /// A byte that has no place there.
    #[error("unexpected byte {found:?} at {at}, expected {expected}")]
    Unexpected {
        /// Its offset.
        at: usize,
        /// The byte.
        found: char,
        /// What may stand there.
        expected: &'static str,
    },
    /// An object, enum or reference, which is never unserialized.
    #[error("PHP type {0:?} is refused (objects, enums and references are not accepted)")]
    Refused(char),
    /// A number that does not parse.
    #[error("bad number at byte {0}")]
    BadNumber(usize),
    /// A string or array length beyond the input.
    #[error("declared length {declared} at byte {at} exceeds the {left} bytes left")]
    LengthPastEnd {
        /// Offset of the length.
        at: usize,
        /// The length.
        declared: u64,
        /// Bytes left.
        left: usize,
    },
    /// Arrays nested too deep.
    #[error("arrays nested deeper than {0}")]
    TooDeep(usize),
    /// An array with too many elements.
    #[error("more than {0} elements")]
    TooManyElements(usize),
    /// Bytes after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// An array key that is neither an int nor a string.
    #[error("array key must be an int or a string")]
    BadKey,
    /// A string that is not UTF-8 where JSON needs text.
    #[error("string is not UTF-8, which a JSON session cannot hold")]
    NotUtf8,
    /// A session that is not an array; the PHP type found.
    #[error("a session must be an array, not {0}")]
    SessionNotArray(&'static str),
}

/// Parses one serialized value that must fill `input` entirely.
pub fn unserialize(input: &[u8], limits: Limits) -> Result<Value, PhpError> {
    let mut p = Parser { input, pos: 0, limits, elements: 0 };
    let v = p.value(0)?;
    if p.pos != input.len() {
        return Err(PhpError::Trailing(input.len() - p.pos));
    }
    Ok(v)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Limits,
    elements: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Result<u8, PhpError> {
        self.input.get(self.pos).copied().ok_or(PhpError::Truncated(self.pos))
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), PhpError> {
        let b = self.peek()?;
        if b != byte {
            return Err(PhpError::Unexpected { at: self.pos, found: b as char, expected });
        }
        self.pos += 1;
        Ok(())
    }

    /// The text up to (not including) `end`, which is consumed.
    fn until(&mut self, end: u8) -> Result<&[u8], PhpError> {
        let start = self.pos;
        // Numbers are short; a run of 32 bytes without the terminator is garbage.
        let window = &self.input[start..self.input.len().min(start + 32)];
        let Some(i) = window.iter().position(|&b| b == end) else {
            return Err(if window.len() < 32 {
                PhpError::Truncated(self.input.len())
            } else {
                PhpError::BadNumber(start)
            });
        };
        self.pos = start + i + 1;
        Ok(&self.input[start..start + i])
    }

    fn int(&mut self, end: u8) -> Result<i64, PhpError> {
        let at = self.pos;
        let text = self.until(end)?;
        std::str::from_utf8(text).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(PhpError::BadNumber(at))
    }

    fn len(&mut self) -> Result<usize, PhpError> {
        let at = self.pos;
        let n = self.int(b':')?;
        let left = self.input.len() - self.pos;
        let n = u64::try_from(n).map_err(|_| PhpError::BadNumber(at))?;
        if n > left as u64 {
            return Err(PhpError::LengthPastEnd { at, declared: n, left });
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<Vec<u8>, PhpError> {
        let n = self.len()?;
        self.expect(b'"', "'\"'")?;
        let end =
            self.pos.checked_add(n).filter(|e| *e <= self.input.len()).ok_or(PhpError::Truncated(self.input.len()))?;
        let s = self.input[self.pos..end].to_vec();
        self.pos = end;
        self.expect(b'"', "'\"'")?;
        self.expect(b';', "';'")?;
        Ok(s)
    }

    fn value(&mut self, depth: usize) -> Result<Value, PhpError> {
        let at = self.pos;
        let tag = self.peek()?;
        self.pos += 1;
        if tag == b'N' {
            self.expect(b';', "';'")?;
            return Ok(Value::Null);
        }
        if matches!(tag, b'O' | b'C' | b'r' | b'R' | b'E' | b'S') {
            return Err(PhpError::Refused(tag as char));
        }
        if !matches!(tag, b'b' | b'i' | b'd' | b's' | b'a') {
            return Err(PhpError::Unexpected { at, found: tag as char, expected: "a type letter" });
        }
        self.expect(b':', "':'")?;
        match tag {
            b'b' => match self.int(b';')? {
                0 => Ok(Value::Bool(false)),
                1 => Ok(Value::Bool(true)),
                _ => Err(PhpError::BadNumber(at)),
            },
            b'i' => Ok(Value::Int(self.int(b';')?)),
            b'd' => {
                let text = self.until(b';')?;
                let f = match text {
                    b"INF" => f64::INFINITY,
                    b"-INF" => f64::NEG_INFINITY,
                    b"NAN" => f64::NAN,
                    _ => std::str::from_utf8(text)
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)))
                        .and_then(|s| s.parse::<f64>().ok())
                        .ok_or(PhpError::BadNumber(at))?,
                };
                Ok(Value::Float(f))
            }
            b's' => Ok(Value::Str(self.string()?)),
            _ => {
                if depth >= self.limits.max_depth {
                    return Err(PhpError::TooDeep(self.limits.max_depth));
                }
                // Each element takes at least 4 bytes (`i:0;N;` is 6), so `len` already bounds
                // the count by the input; the element budget bounds it across the whole value.
                let n = self.len()?;
                self.expect(b'{', "'{'")?;
                let mut items = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    self.elements += 1;
                    if self.elements > self.limits.max_elements {
                        return Err(PhpError::TooManyElements(self.limits.max_elements));
                    }
                    let key = match self.value(depth + 1)? {
                        Value::Int(i) => Key::Int(i),
                        Value::Str(s) => Key::Str(s),
                        _ => return Err(PhpError::BadKey),
                    };
                    items.push((key, self.value(depth + 1)?));
                }
                self.expect(b'}', "'}'")?;
                Ok(Value::Array(items))
            }
        }
    }
}

/// A PHP value as JSON: a list (keys 0, 1, … in order) becomes an array, any other array an
/// object with its keys as strings. NaN and infinities, which JSON lacks, become `null`.
pub fn to_json(v: &Value) -> Result<serde_json::Value, PhpError> {
    Ok(match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(n) => serde_json::Value::from(*n),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or_default(),
        Value::Str(b) => serde_json::Value::String(String::from_utf8(b.clone()).map_err(|_| PhpError::NotUtf8)?),
        Value::Array(items) => {
            let is_list = items.iter().enumerate().all(|(i, (k, _))| *k == Key::Int(i as i64));
            if is_list && !items.is_empty() {
                serde_json::Value::Array(items.iter().map(|(_, v)| to_json(v)).collect::<Result<_, _>>()?)
            } else {
                serde_json::Value::Object(object(items)?)
            }
        }
    })
}

fn object(items: &[(Key, Value)]) -> Result<serde_json::Map<String, serde_json::Value>, PhpError> {
    items
        .iter()
        .map(|(k, v)| {
            let key = match k {
                Key::Int(n) => n.to_string(),
                Key::Str(b) => String::from_utf8(b.clone()).map_err(|_| PhpError::NotUtf8)?,
            };
            Ok((key, to_json(v)?))
        })
        .collect()
}

/// JSON as the PHP value `json_decode($s, true)` makes: objects become arrays whose canonical
/// integer keys are integers, as PHP stores them.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::Str(s.as_bytes().to_vec()),
        serde_json::Value::Array(a) => Value::list(a.iter().map(from_json)),
        serde_json::Value::Object(o) => Value::map(o.iter().map(|(k, v)| (k.as_str(), from_json(v)))),
    }
}

/// A serialized `$_SESSION` (`Context::sessionEncode`) as the JSON object our gateway keeps; the
/// empty string (no session) is `None`. Top-level keys are always object keys, even for a list.
pub fn session_to_json(
    serialized: &[u8],
    limits: Limits,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, PhpError> {
    if serialized.is_empty() {
        return Ok(None);
    }
    match unserialize(serialized, limits)? {
        Value::Array(items) => Ok(Some(object(&items)?)),
        Value::Null => Ok(None),
        Value::Bool(_) => Err(PhpError::SessionNotArray("a bool")),
        Value::Int(_) => Err(PhpError::SessionNotArray("an int")),
        Value::Float(_) => Err(PhpError::SessionNotArray("a float")),
        Value::Str(_) => Err(PhpError::SessionNotArray("a string")),
    }
}

/// A JSON session as `Context::sessionEncode` writes it.
pub fn session_from_json(session: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    Value::map(session.iter().map(|(k, v)| (k.as_str(), from_json(v)))).serialize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Made with PHP 8.2:
    /// `serialize(["a"=>1,"b"=>[1.5,true,null],"7"=>"x\"y", -3=>"é"])`.
    const PHP_ARRAY: &[u8] =
        b"a:4:{s:1:\"a\";i:1;s:1:\"b\";a:3:{i:0;d:1.5;i:1;b:1;i:2;N;}i:7;s:3:\"x\"y\";i:-3;s:2:\"\xc3\xa9\";}";

    fn php_array() -> Value {
        Value::map([
            ("a", Value::Int(1)),
            ("b", Value::list([Value::Float(1.5), Value::Bool(true), Value::Null])),
            ("7", Value::from("x\"y")),
            ("-3", Value::from("é")),
        ])
    }

    #[test]
    fn reads_and_writes_php_bytes_exactly() {
        assert_eq!(unserialize(PHP_ARRAY, Limits::default()).unwrap(), php_array());
        assert_eq!(php_array().serialize(), PHP_ARRAY);
    }

    #[test]
    fn scalars_as_php_writes_them() {
        // serialize(0.1), serialize(1e100), serialize(INF), serialize(NAN), serialize(PHP_INT_MIN)
        for (text, v) in [
            (&b"d:0.1;"[..], Value::Float(0.1)),
            (b"d:1.0E+100;", Value::Float(1e100)),
            (b"d:INF;", Value::Float(f64::INFINITY)),
            (b"i:-9223372036854775808;", Value::Int(i64::MIN)),
            (b"b:0;", Value::Bool(false)),
            (b"s:0:\"\";", Value::Str(vec![])),
            (b"a:0:{}", Value::Array(vec![])),
        ] {
            assert_eq!(unserialize(text, Limits::default()).unwrap(), v, "{}", String::from_utf8_lossy(text));
        }
        assert!(matches!(unserialize(b"d:NAN;", Limits::default()), Ok(Value::Float(f)) if f.is_nan()));
        let again = unserialize(&Value::Float(1e100).serialize(), Limits::default()).unwrap();
        assert_eq!(again, Value::Float(1e100));
    }

    #[test]
    fn hostile_input_is_a_precise_error() {
        let l = Limits { max_depth: 4, max_elements: 10 };
        let cases: &[(&[u8], PhpError)] = &[
            (b"", PhpError::Truncated(0)),
            (b"a:999999999:{", PhpError::LengthPastEnd { at: 2, declared: 999_999_999, left: 1 }),
            (b"s:99:\"ab\";", PhpError::LengthPastEnd { at: 2, declared: 99, left: 5 }),
            (b"a:-1:{}", PhpError::BadNumber(2)),
            (b"O:8:\"stdClass\":0:{}", PhpError::Refused('O')),
            (b"a:1:{i:0;R:1;}", PhpError::Refused('R')),
            (b"a:1:{a:0:{}i:1;}", PhpError::BadKey),
            (b"a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:0:{}}}}}", PhpError::TooDeep(4)),
            (b"i:1;x", PhpError::Trailing(1)),
            (b"i:1x;", PhpError::BadNumber(2)),
            (b"b:2;", PhpError::BadNumber(0)),
            (b"d:1e5e5;", PhpError::BadNumber(0)),
            (b"x:1;", PhpError::Unexpected { at: 0, found: 'x', expected: "a type letter" }),
        ];
        for (input, err) in cases {
            assert_eq!(unserialize(input, l).as_ref(), Err(err), "{}", String::from_utf8_lossy(input));
        }
        let many = format!("a:11:{{{}}}", (0..11).map(|i| format!("i:{i};N;")).collect::<String>());
        assert_eq!(unserialize(many.as_bytes(), l), Err(PhpError::TooManyElements(10)));
        let digits = format!("i:{};", "1".repeat(40));
        assert_eq!(unserialize(digits.as_bytes(), l), Err(PhpError::BadNumber(2)));
    }

    #[test]
    fn sessions_bridge_to_json_and_back() {
        let s = session_to_json(PHP_ARRAY, Limits::default()).unwrap().unwrap();
        assert_eq!(serde_json::Value::Object(s.clone()), json!({"a":1,"b":[1.5,true,null],"7":"x\"y","-3":"é"}));
        // serde_json's map is sorted, so compare the values, not the key order.
        assert_eq!(session_to_json(&session_from_json(&s), Limits::default()).unwrap(), Some(s));
        assert_eq!(session_to_json(b"", Limits::default()).unwrap(), None);
        assert_eq!(session_to_json(b"i:1;", Limits::default()), Err(PhpError::SessionNotArray("an int")));
        assert_eq!(session_to_json(b"a:1:{i:0;s:1:\"\xff\";}", Limits::default()), Err(PhpError::NotUtf8));
        // A list at top level still becomes an object: a session is always keyed.
        let list = session_to_json(b"a:1:{i:0;s:1:\"x\";}", Limits::default()).unwrap().unwrap();
        assert_eq!(serde_json::Value::Object(list), json!({"0":"x"}));
    }
}
